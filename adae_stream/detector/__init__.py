"""The adversarial auto-encoder detector, on Keras 3 with the process's backend (TensorFlow, JAX or PyTorch:
detector/backend.py). Nothing here knows about Kafka."""
