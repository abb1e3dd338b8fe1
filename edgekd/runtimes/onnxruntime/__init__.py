"""ONNX Runtime: sessions, inference, the CPU flavour's INT8 encoding, bench runtimes."""
