"""Parse a Triton ``config.pbtxt`` with protobuf's text format, as Triton itself does.

Triton's ``ModelConfig`` message lives in ``tritonclient`` (``tritonclient.grpc.model_config_pb2``);
when that is installed it is used. Otherwise :func:`model_config_class` builds the subset of
``inference.ModelConfig`` that ``tuner export --format triton`` writes -- the same message, field
names, types and numbers as Triton's ``model_config.proto`` (checked against
triton-inference-server/common ``protobuf/model_config.proto``: ``ModelConfig.input`` = 5, ``output`` = 6,
``ModelInput`` / ``ModelOutput`` / ``ModelTensorReshape`` and the ``DataType`` enum with Triton's own
numbers) -- so a file parses here exactly when its fields would parse in Triton (an unknown or mistyped
field is a parse error in both).
"""

from __future__ import annotations

from functools import cache
from typing import Any

__all__ = ["DATA_TYPES", "model_config_class", "parse_config_pbtxt"]

#: Triton's ``DataType`` enum (``model_config.proto``), in the order of its numbers: TYPE_INVALID = 0 ...
#: TYPE_BF16 = 14
DATA_TYPES = (
    "TYPE_INVALID",
    "TYPE_BOOL",
    "TYPE_UINT8",
    "TYPE_UINT16",
    "TYPE_UINT32",
    "TYPE_UINT64",
    "TYPE_INT8",
    "TYPE_INT16",
    "TYPE_INT32",
    "TYPE_INT64",
    "TYPE_FP16",
    "TYPE_FP32",
    "TYPE_FP64",
    "TYPE_STRING",
    "TYPE_BF16",
)


@cache
def model_config_class() -> Any:
    """The ``inference.ModelConfig`` message class (Triton's own when ``tritonclient`` is installed)."""
    try:
        from tritonclient.grpc import model_config_pb2  # type: ignore[import-not-found]

        return model_config_pb2.ModelConfig
    except ImportError:
        pass
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    f = descriptor_pb2.FieldDescriptorProto
    fdp = descriptor_pb2.FileDescriptorProto(
        name="tuner_triton_model_config.proto", package="inference", syntax="proto3"
    )

    def message(name: str, fields: list[tuple[str, int, int, int, str]]) -> descriptor_pb2.DescriptorProto:
        msg = fdp.message_type.add(name=name)
        for field_name, number, ftype, label, type_name in fields:
            field = msg.field.add(name=field_name, number=number, type=ftype, label=label)
            if type_name:
                field.type_name = type_name
        return msg

    opt, rep = f.LABEL_OPTIONAL, f.LABEL_REPEATED
    data_type = fdp.enum_type.add(name="DataType")
    for i, value in enumerate(DATA_TYPES):
        data_type.value.add(name=value, number=i)
    message("ModelTensorReshape", [("shape", 1, f.TYPE_INT64, rep, "")])
    model_input = message(
        "ModelInput",
        [
            ("name", 1, f.TYPE_STRING, opt, ""),
            ("data_type", 2, f.TYPE_ENUM, opt, ".inference.DataType"),
            ("format", 3, f.TYPE_ENUM, opt, ".inference.ModelInput.Format"),
            ("dims", 4, f.TYPE_INT64, rep, ""),
            ("reshape", 5, f.TYPE_MESSAGE, opt, ".inference.ModelTensorReshape"),
            ("is_shape_tensor", 6, f.TYPE_BOOL, opt, ""),
            ("allow_ragged_batch", 7, f.TYPE_BOOL, opt, ""),
            ("optional", 8, f.TYPE_BOOL, opt, ""),
        ],
    )
    input_format = model_input.enum_type.add(name="Format")
    for i, value in enumerate(("FORMAT_NONE", "FORMAT_NHWC", "FORMAT_NCHW")):
        input_format.value.add(name=value, number=i)
    message(
        "ModelOutput",
        [
            ("name", 1, f.TYPE_STRING, opt, ""),
            ("data_type", 2, f.TYPE_ENUM, opt, ".inference.DataType"),
            ("dims", 3, f.TYPE_INT64, rep, ""),
            ("label_filename", 4, f.TYPE_STRING, opt, ""),
            ("reshape", 5, f.TYPE_MESSAGE, opt, ".inference.ModelTensorReshape"),
            ("is_shape_tensor", 6, f.TYPE_BOOL, opt, ""),
        ],
    )
    group = message(
        "ModelInstanceGroup",
        [
            ("name", 1, f.TYPE_STRING, opt, ""),
            ("count", 2, f.TYPE_INT32, opt, ""),
            ("gpus", 3, f.TYPE_INT32, rep, ""),
            ("kind", 4, f.TYPE_ENUM, opt, ".inference.ModelInstanceGroup.Kind"),
        ],
    )
    kind = group.enum_type.add(name="Kind")
    for i, value in enumerate(("KIND_AUTO", "KIND_GPU", "KIND_CPU", "KIND_MODEL")):
        kind.value.add(name=value, number=i)
    message(
        "ModelDynamicBatching",
        [
            ("preferred_batch_size", 1, f.TYPE_INT32, rep, ""),
            ("max_queue_delay_microseconds", 2, f.TYPE_UINT64, opt, ""),
            ("preserve_ordering", 3, f.TYPE_BOOL, opt, ""),
        ],
    )
    message("ModelParameter", [("string_value", 1, f.TYPE_STRING, opt, "")])
    graph = ".inference.ModelOptimizationPolicy.Graph"
    policy = message("ModelOptimizationPolicy", [("graph", 1, f.TYPE_MESSAGE, opt, graph)])
    policy.nested_type.add(name="Graph").field.add(name="level", number=1, type=f.TYPE_INT32, label=opt)
    config = message(
        "ModelConfig",
        [
            ("name", 1, f.TYPE_STRING, opt, ""),
            ("platform", 2, f.TYPE_STRING, opt, ""),
            ("max_batch_size", 4, f.TYPE_INT32, opt, ""),
            ("input", 5, f.TYPE_MESSAGE, rep, ".inference.ModelInput"),
            ("output", 6, f.TYPE_MESSAGE, rep, ".inference.ModelOutput"),
            ("instance_group", 7, f.TYPE_MESSAGE, rep, ".inference.ModelInstanceGroup"),
            ("dynamic_batching", 11, f.TYPE_MESSAGE, opt, ".inference.ModelDynamicBatching"),
            ("optimization", 12, f.TYPE_MESSAGE, opt, ".inference.ModelOptimizationPolicy"),
            ("parameters", 14, f.TYPE_MESSAGE, rep, ".inference.ModelConfig.ParametersEntry"),
            ("backend", 17, f.TYPE_STRING, opt, ""),
        ],
    )
    entry = config.nested_type.add(name="ParametersEntry")
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, type=f.TYPE_STRING, label=opt)
    entry.field.add(name="value", number=2, type=f.TYPE_MESSAGE, label=opt, type_name=".inference.ModelParameter")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("inference.ModelConfig"))


def parse_config_pbtxt(text: str) -> Any:
    """A parsed ``ModelConfig`` message; ``google.protobuf.text_format.ParseError`` when invalid."""
    from google.protobuf import text_format

    return text_format.Parse(text, model_config_class()())
