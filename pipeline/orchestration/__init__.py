"""What runs a compiled pipeline somewhere: Vertex submit, and an offline run of the exact
Vertex PipelineJob on this machine. The DAG itself lives in pipeline/pipeline.py."""
