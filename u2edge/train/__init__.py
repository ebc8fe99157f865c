"""Fine-tuning: ``u2edge train``, deep supervision on your own images and masks (or a teacher
model's masks), into checkpoints that export, build and run like the official weights. Needs torch."""

from .loop import TrainConfig, TrainResult, resume, train

__all__ = ["TrainConfig", "TrainResult", "train", "resume"]
