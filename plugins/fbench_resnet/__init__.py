"""Built-in ResNet detectors (timm backbones)."""
