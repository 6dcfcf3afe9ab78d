"""hvd's drafters inside other serving engines (vLLM: `vllm.py`)."""
