"""Recording real gameplay clips with their true actions (Procgen, Atari through the ALE), and
checking a recorded folder. The game packages are optional and imported only when a game opens."""

from genie_core.tasks.record.recorder import CONVENTION, POLICIES, Policy, check_new_folder, record
from genie_core.tasks.record.sources import INSTALL_HINT, PROCGEN_STEP, MissingDependency, Source, open_source, parse_env
from genie_core.tasks.record.verify import VerifyReport, load_meta, verify_recording

__all__ = ["CONVENTION", "INSTALL_HINT", "MissingDependency", "POLICIES", "PROCGEN_STEP", "Policy",
           "Source", "VerifyReport", "check_new_folder", "load_meta", "open_source", "parse_env", "record", "verify_recording"]
