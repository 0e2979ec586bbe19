"""A TFX Transform executor whose processing is a subclass of TFX's TransformProcessor.

TFX's `Do` constructs its module's TransformProcessor by name, with no hook to pass
another: the name is swapped for the length of the call. Components of a local run execute
one at a time in this process, so nothing else sees the swap."""

from __future__ import annotations

from tfx.components.transform import executor as transform_executor


class ProcessorExecutor(transform_executor.Executor):
    """TFX's Transform executor, processing with PROCESSOR."""

    PROCESSOR: type = transform_executor.TransformProcessor

    def Do(self, input_dict, output_dict, exec_properties) -> None:  # noqa: N802 - TFX's name
        original = transform_executor.TransformProcessor
        transform_executor.TransformProcessor = self.PROCESSOR
        try:
            super().Do(input_dict, output_dict, exec_properties)
        finally:
            transform_executor.TransformProcessor = original
