"""Model files for a bundle: conversion (:mod:`.convert`), int8 quantization and its gated
ladder (:mod:`.quantize`), the encoder's build driver (:mod:`.build`), parity
(:mod:`.parity`) and MAC counts (:mod:`.macs`)."""

__all__: list[str] = []
