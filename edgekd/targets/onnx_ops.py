"""The ONNX ops by what they cost a runtime: free (shape only), elementwise (fused into the producing
kernel), pooling. ``graph_cost.py`` groups a graph's nodes into layers with these sets."""

# Ops that only change metadata (or compute shapes): no kernel, no traffic.
FREE_OPS = frozenset(
    {
        "Reshape",
        "Flatten",
        "Squeeze",
        "Unsqueeze",
        "Shape",
        "Size",
        "Constant",
        "ConstantOfShape",
        "Identity",
        "Dropout",
        "Range",
    }
)
UNARY_ELEMENTWISE = frozenset(
    {
        "Relu",
        "Clip",
        "LeakyRelu",
        "Sigmoid",
        "HardSigmoid",
        "HardSwish",
        "Tanh",
        "Elu",
        "Selu",
        "Gelu",
        "Softplus",
        "Mish",
        "Erf",
        "Exp",
        "Log",
        "Sqrt",
        "Neg",
        "Abs",
        "Reciprocal",
        "Cast",
        "QuantizeLinear",
        "DequantizeLinear",
        "BatchNormalization",
        "InstanceNormalization",
    }
)
BINARY_ELEMENTWISE = frozenset({"Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "PRelu", "Where", "Equal"})
ELEMENTWISE = UNARY_ELEMENTWISE | BINARY_ELEMENTWISE
POOL_OPS = frozenset(
    {
        "MaxPool",
        "AveragePool",
        "GlobalAveragePool",
        "GlobalMaxPool",
        "ReduceMean",
        "ReduceMax",
        "ReduceSum",
        "ReduceMin",
        "LpPool",
    }
)
