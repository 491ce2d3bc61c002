"""OpenVINO backend (work in progress: registers nothing yet)."""
