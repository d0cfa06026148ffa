"""The adversarial auto-encoder detector. TensorFlow/Keras only: nothing here knows about Kafka."""
