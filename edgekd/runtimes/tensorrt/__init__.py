"""TensorRT: engine build (8.x, 10.x, 11.x), engine run and timing, the bench runtime."""
