"""The Kafka side: decode -> batch -> score -> encode, delivery and offsets. Knows nothing of TensorFlow."""
