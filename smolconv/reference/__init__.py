"""The reference a converted model is checked against: transformers in float32, the metrics, the gates."""
