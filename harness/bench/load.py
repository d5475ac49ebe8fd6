"""Whether the machine is loaded: other processes' work slows and spreads every timing taken beside it.

Load per core: the 1-minute load average (os.getloadavg()[0], runnable processes) over os.cpu_count(). Above
LOADED_PER_CORE, processes wait for a core, so a timed call may wait too: bench warns at the start and at the
end of its run and records both readings in every row (load_per_core_start, load_per_core_end), so the report
can say a run's numbers were taken on a busy machine.
"""
import math
import os

LOADED_PER_CORE = 1.0  # more runnable processes than cores: some of them wait


def per_core():
    """The 1-minute load average over the number of cores; NaN where the platform has no load average."""
    try:
        return os.getloadavg()[0] / (os.cpu_count() or 1)
    except OSError:
        return math.nan


def warning(reading, when):
    """'' for a quiet machine (or no reading), else one line saying how loaded it was `when` ('start', 'end')."""
    if not reading > LOADED_PER_CORE:
        return ""
    return (f"warning: the machine is loaded at the {when} of the run: load average {reading:.2f} per core "
            f"(above {LOADED_PER_CORE:g}); other processes slow and spread these timings")
