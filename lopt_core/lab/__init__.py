"""Lab: prompt analysis (spectra, truncation), widgets, sweeps, run profiles and the notebook runner."""
from lopt_core.lab.profiles import PROFILES, Profile, get_profile
from lopt_core.lab.sweep import gather, run_sweep

__all__ = ["PROFILES", "Profile", "gather", "get_profile", "run_sweep"]
