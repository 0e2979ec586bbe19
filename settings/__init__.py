"""The ground floor: the settings machinery, where the project and its outputs live, and where
every command's library logs go. Every other package may import it; it imports none of them."""
