"""One home per runtime: everything that talks to an inference engine lives here.

    onnxruntime/   sessions and providers (session.py), batch inference (infer.py), the CPU
                   flavour's INT8 encoding by instruction set (int8_encoding.py), and the bench
                   runtimes over ONNX Runtime's CPU, CUDA and TensorRT providers (runtime.py)
    tensorrt/      engine build for TensorRT 8/10/11 and the emitted trtexec script (build.py),
                   engine run and timing (engine.py), the bench runtime (runtime.py)
    torch_eager.py PyTorch eager as a bench runtime
    base.py        what a runtime is (Runtime, Runner, Candidate, ModelFiles)
    registry.py    the runtimes by name

The export stage and the bench stage both use these. Importing this package imports nothing else,
so a light module (the INT8 encoding, for instance) can be used without torch.
"""
