"""The process a background job runs in: ``python -m mrl_core.job_process JOB_ID STORE``.

``mrl_core.jobs.submit`` starts it; it runs the job's CLI command through ``mrl_core.cli.main`` (this module
joins the two, so neither imports the other's caller).
"""

import os
import sys

from mrl_core.cli import main
from mrl_core.jobs import run_job

if __name__ == "__main__":
    exit_code = run_job(int(sys.argv[1]), sys.argv[2], main)
    sys.stdout.flush()
    sys.stderr.flush()
    # The record is written and the store closed: skip the interpreter's teardown (torch and FAISS take
    # seconds to unload), so the process ends when its record says it did.
    os._exit(exit_code)
