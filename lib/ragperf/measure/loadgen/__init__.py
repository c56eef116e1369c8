"""The load generator: Locust in its own processes, every request recorded exactly.

:func:`run_load` writes the workload to ``out_dir``, starts ``python -m locust --headless`` on
``locustfile.py`` (plus ``--master`` and N ``--worker`` processes when ``workers`` > 0), shows a
progress bar, samples the generator's own CPU, stops its processes by PID, and returns a
:class:`LoadResult` whose ``records`` (also ``out_dir/requests.parquet``) hold one row per request
with the columns :data:`RECORD_COLUMNS`. Locust is never imported here: importing it monkey-patches
the process with gevent, which freezes a Jupyter kernel.

Users are closed-loop (a user sends its next request when the previous one ended), so under
overload Locust under-reports latency (coordinated omission): read latency beside the achieved
throughput, and heed ``LoadResult.generator_note`` when the generator itself ran out of CPU.

Adding workers on other machines
--------------------------------
One Locust process drives roughly one CPU core. When the note says the generator was saturated,
add local workers (``run_load(..., workers=N)``) or workers on other machines:

1. On the machine that runs the notebook, call ``run_load(..., remote_workers=N, master_port=5557)``;
   the master listens on all interfaces and waits (up to 150 s) for its local and remote workers.
   The log shows the exact command to run on the other machines.
2. On each other machine, install this project (``pip install -e .``), copy ``<out_dir>/workload.jsonl``,
   and start a worker with the same environment variables (at least these three)::

       RAGPERF_WORKLOAD=/path/to/workload.jsonl RAGPERF_TIMEOUT=30 RAGPERF_CYCLE=1 \\
       python -m locust -f <checkout>/lib/ragperf/measure/loadgen/locustfile.py \\
           --worker --master-host <master ip> --master-port 5557

Workers send their records to the master (which stamps scenario, step and users_target), so every
record lands in ``<out_dir>/records``. The generator's CPU is sampled only on the notebook's machine.
"""

from ragperf.measure.loadgen.engine import (
    LOCUSTFILE,
    LoadgenError,
    LoadResult,
    empty_records,
    generator_note,
    read_records,
    records_frame,
    run_load,
)
from ragperf.measure.loadgen.recording import ERRORS, RECORD_COLUMNS, RECORD_DTYPES

__all__ = [
    "ERRORS",
    "LOCUSTFILE",
    "RECORD_COLUMNS",
    "RECORD_DTYPES",
    "LoadResult",
    "LoadgenError",
    "empty_records",
    "generator_note",
    "read_records",
    "records_frame",
    "run_load",
]
