"""Data: sources (arrays, datasets, files streamed from disk) and the batch iterator."""
from batchtrain.data.dataset import from_batches, open_dataset
from batchtrain.data.stream import StreamSource

open = open_dataset  # batchtrain.data.open("houses.parquet", target="price")

__all__ = ["StreamSource", "from_batches", "open", "open_dataset"]
