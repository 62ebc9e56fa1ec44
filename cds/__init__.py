"""osteohooks: CDS Hooks decision support for bone density, driven by YAML rules."""

__version__ = "0.1.0"
