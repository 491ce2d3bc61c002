"""ncnn backend through pnnx (work in progress: registers nothing yet)."""
