"""``python -m nuro_ml.local_cluster up|down|status``."""

import sys

from nuro_ml.local_cluster.cluster import main

sys.exit(main())
