"""steerlimits: replication pipeline for two papers on the limits of activation steering."""

__version__ = "0.1.0"
