"""gpconv.conformance: prove a backend equal to the reference.

Checks (``checks``) and the porting traps their failures name (``traps``), golden vectors
(``golden``), the reference's own finite-difference self-check (``selfcheck``), hypothesis
strategies (``strategies``) and mutant backends that the suite must catch (``mutants``).
``runner.run`` collects a ``Report``; ``gpconv check`` prints it.
"""

from .checks import (
    check_interleave,
    check_kpointwise,
    check_network,
    check_params,
    run_backend_checks,
)
from .golden import check_golden
from .results import CheckResult
from .runner import Report, run

__all__ = [
    "CheckResult",
    "Report",
    "check_golden",
    "check_interleave",
    "check_kpointwise",
    "check_network",
    "check_params",
    "run",
    "run_backend_checks",
]
