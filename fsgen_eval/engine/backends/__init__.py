"""Engine backends besides this project's transformers loop (each imports its library lazily)."""
