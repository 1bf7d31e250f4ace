"""Installs bench.timeline in ``paygate serve`` when PAYGATE_TIMELINE is set (diagnosis only)."""

import os
import sys

if os.environ.get("PAYGATE_TIMELINE") and "serve" in sys.argv:
    import bench.timeline

    bench.timeline.install(os.environ["PAYGATE_TIMELINE"])
