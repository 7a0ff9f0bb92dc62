"""Live vehicle state from the telemetry stream (``nuro_ml.features.stream_views``).

The stream pushes the newest state per vehicle through ``vehicle_live_push`` into
``vehicle_live_state``; its offline history is the live-state table under the platform's ETL
output (batch ``vehicle_can`` partitions, then the stream's tail; ``nuro_ml.etl.live_state``).
The ``vehicle`` entity is the one ``scene_features`` declares (same name and join key).
"""

from nuro_ml import settings
from nuro_ml.features.stream_views import live_objects

# Built when the repository is read, like scene_features' sources, so NURO_ML_DATA_DIR applies.
# The entity is left out: the repository's modules are scanned for Feast objects, and
# scene_features declares the same one.
vehicle_live_push, vehicle_live_state = live_objects(settings.etl_output_dir())[1:]
