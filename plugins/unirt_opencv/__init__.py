"""OpenCV DNN backend (work in progress: registers nothing yet)."""
