"""An MXNet CustomOp (Python) used by the partitioning tests: it can never be exported to ONNX,
so it always stays in MXNet. Importing this module registers it."""

import mxnet as mx


class ScaleShift(mx.operator.CustomOp):
    """y = 0.5 * x + 0.25 (elementwise), written in Python."""

    def forward(self, is_train, req, in_data, out_data, aux):
        self.assign(out_data[0], req[0], in_data[0] * 0.5 + 0.25)

    def backward(self, req, out_grad, in_data, out_data, in_grad, aux):
        self.assign(in_grad[0], req[0], out_grad[0] * 0.5)


@mx.operator.register("trtc_scale_shift")
class ScaleShiftProp(mx.operator.CustomOpProp):
    def __init__(self):
        super().__init__(need_top_grad=True)

    def list_arguments(self):
        return ["data"]

    def list_outputs(self):
        return ["output"]

    def infer_shape(self, in_shape):
        return in_shape, [in_shape[0]], []

    def create_operator(self, ctx, shapes, dtypes):
        return ScaleShift()
