"""ReasonAudio: video-text-to-audio generation (docs/architecture.md maps the package)."""
from reasonaudio import moved

moved.install()
