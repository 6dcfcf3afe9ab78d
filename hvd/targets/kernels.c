/* hvd's native kernels, built as one translation unit into one shared library (native.py compiles
 * this file alone, with -ffp-contract=off and no fast-math; its build id hashes every file below).
 *
 *   kernels_common.h      helpers both targets share: hsum8, our own exp, softmax8, value_rows
 *   kernels_int8.c        the exact int8 target (exact.py), part 1: row-wise ops, integer linear
 *   kernels_int8_layer.c  the exact int8 target, part 2: rotary + KV cache, attention, one layer
 *   kernels_f32.c         the float32 target (HFTarget): hvd_linear_f32, hvd_attention_f32
 *
 * Each file's header states its exactness contract. The order matters: part 2 uses part 1's
 * VNNI switch and ops.
 */
#include "kernels_common.h"
#include "kernels_int8.c"
#include "kernels_int8_layer.c"
#include "kernels_f32.c"
