"""Reading an ONNX model: the fast skeleton reader, validation, and the graph facts every layer
reads."""
