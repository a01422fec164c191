"""Every default of the compiler, in one place."""

# Engine segments with fewer MXNet ops than this stay in MXNet: an engine launch, its IO copies and
# a stage boundary cost more than a couple of ops save (TF-TRT uses 3, Torch-TensorRT 5).
MIN_SEGMENT_SIZE = 3

# Accuracy gate: max |trtc - mxnet| / max |mxnet| per output.
FP32_TOLERANCE = 1e-4
# fp16 engines are checked on an emulation (ONNX Runtime running the fp16 ONNX: weights and every
# activation rounded to fp16) against MXNet's fp32 forward. fp16 has 11 significant bits
# (relative step 9.8e-4); errors compound over depth, so the gate allows 2e-2 of the output range.
FP16_TOLERANCE = 2e-2
# An accuracy-gate failure this many times over the tolerance (and over 1% relative) is no
# rounding error but a wrong conversion: its message never suggests raising --tolerance.
WRONG_NOT_ROUNDING = 100.0

VERIFY_SEED = 0
# The ONNX opset mxnet.onnx's converters implement (its newest are for 13); the export declares it.
ONNX_OPSET = 13
# TensorRT builder workspace limit (bytes); None keeps the builder's default.
WORKSPACE_BYTES = None
# Stack of the thread that runs a TensorRT build (in its child process, trtc/_isolate.py): the
# builder recurses over the network, ~3 KiB a layer; a chain of 3,000 ReLUs overflowed the main
# thread's 8 MiB. Address space only: pages are committed as the recursion touches them.
BUILD_STACK_BYTES = 256 << 20
BACKENDS = ("auto", "tensorrt", "tensorrt_rtx")

# int8 engines (Q/DQ: per-channel weights, per-tensor activations, 8 bits: a relative step of
# 1/127 per quantized layer, compounding): max |trtc - mxnet| / max |mxnet| allowed per output,
# and for outputs shaped (batch, classes) the fraction of argmax (top-1) agreements with MXNet's
# fp32 forward, both on the calibration inputs (at most INT8_GATE_SAMPLES of them).
INT8_TOLERANCE = 0.15
INT8_MIN_TOP1 = 0.9
INT8_GATE_SAMPLES = 16

# Where ops kept out of TensorRT engines run (--residual): ONNX Runtime stages wherever an exact
# ONNX exists and passes the gate; MXNet stages for the rest (or for all of them: 'mxnet').
RESIDUAL_EXECUTORS = ("onnxruntime", "mxnet")
