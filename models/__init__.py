"""Torch models and their lifecycle: GRU4Rec (session model), offline evaluation, data loading.

``models`` knows nothing of Kafka or Faust; services hand it data (and, later, a Redis client).
"""
