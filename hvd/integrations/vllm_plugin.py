"""hvd's vLLM plugin (entry point group `vllm.general_plugins`, run by vLLM in each of its
processes): registers the speculative method `hvd` (hvd/integrations/vllm_speculator.py)
where vLLM takes registered methods (0.34 and later). Older vLLM has no such registry and uses
`custom_class` (hvd/integrations/vllm.py): there it does nothing. Light: the method's config is
named, not imported, until vLLM resolves it."""
from __future__ import annotations

METHOD = "hvd"
CONFIG = "hvd.integrations.vllm_speculator.HvdSpeculatorConfig"


def register() -> bool:
    """Whether the method was registered (False: this vLLM has no registry of methods)."""
    try:
        from vllm.v1.worker.gpu.spec_decode.speculator_config import register_speculative_method
    except ImportError:
        return False
    register_speculative_method(METHOD, CONFIG)
    return True
