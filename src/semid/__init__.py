"""semid: Semantic IDs for generative recommendation.

Pipeline rooms (each a subpackage): data -> embed -> quantize -> ids -> rec / llm -> serve.
"""

from semid.errors import SemidError

__version__ = "0.1.0"

__all__ = ["SemidError", "__version__"]
