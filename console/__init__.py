"""What a person sees: the run console and where every other command's noise goes."""
