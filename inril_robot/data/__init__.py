"""Episode store (zarr v3, crash-safe), window sampling for training, dataset tools and importers."""

from inril_robot.data.store import (
    CONTROL_CODES,
    Dataset,
    DatasetError,
    DatasetWriter,
    Episode,
    EpisodeWriter,
)

__all__ = ["CONTROL_CODES", "Dataset", "DatasetError", "DatasetWriter", "Episode", "EpisodeWriter"]
