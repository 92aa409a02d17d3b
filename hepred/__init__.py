"""hepred: hematoma expansion prediction."""
