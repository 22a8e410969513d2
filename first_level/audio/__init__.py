"""Audio first-level models: read WAV, log-mel spectrograms (cached), the CNN and its fold model.

Modules: ``io`` (read, resample, trim/pad), ``features`` (log-mel, cache, statistics), ``metadata``
(FAT2019 / ESC-50 / CSV readers), ``cnn`` (the network), ``crops`` (training crops, inference
windows and their pooling, SpecAugment), ``model`` (the fold model), ``dataset`` (metadata + audio
folder -> checked spectrograms for the runner), ``noisy`` (a noisy set: Lsoft, batch sampling),
``noisy_data`` (its checks), ``noisy_filter`` (the noisy rows earlier fold models agree with).
"""

from first_level.audio.features import (
                                        PRESETS,
                                        MelSettings,
                                        get_preset,
                                        load_spectrograms,
                                        log_mel,
                                        logmel_statistics,
                                        mel_filterbank,
                                        statistics_names,
)
from first_level.audio.io import AudioError, list_audio_files, pad_or_trim, read_audio
from first_level.audio.metadata import AudioMeta, MetadataError, read_metadata
from first_level.audio.model import MODEL_PRESETS, AudioCNNModel
from first_level.audio.noisy import NoisySet, NoisySettings

__all__ = [
    "AudioCNNModel", "AudioError", "AudioMeta", "MODEL_PRESETS", "MelSettings", "MetadataError",
    "NoisySet", "NoisySettings",
    "PRESETS", "get_preset", "list_audio_files", "load_spectrograms", "log_mel",
    "logmel_statistics", "mel_filterbank", "pad_or_trim", "read_audio", "read_metadata",
    "statistics_names",
]
