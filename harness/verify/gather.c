/* The judge's table gather (harness/verify/tables.py): each weight of a block read from its group's table.

   table:   double [rows, groups, 16]; entry q of (row, group) is the weight whose nibble is q (v = q - 8)
   packed:  uint8 [rows, half]; byte j holds column 2j in its low nibble and 2j + 1 in its high one
   width:   columns per group (the last group may be shorter); groups = ceil(2 * half / width)
   out:     double [rows, 2 * half] <- table[row, c / width, nibble(row, c)]
   out_abs: float [rows, 2 * half] <- (float)|out| (C's conversion: to nearest), or NULL for none

   Nothing else: the tables are the reference's (NumPy), so this file does no arithmetic on a weight.
   It is built apart from kernels/int4_cpu.c (harness/cbuild.py) and shares no code with any kernel. */
#include <math.h>
#include <stdint.h>

void judge_gather(const double *table, const uint8_t *packed, int64_t rows, int64_t half, int64_t width,
                  double *out, float *out_abs) {
    int64_t in = 2 * half, groups = (in + width - 1) / width;
    for (int64_t r = 0; r < rows; r++) {
        const uint8_t *p = packed + r * half;
        double *o = out + r * in;
        float *a = out_abs ? out_abs + r * in : 0;
        for (int64_t g = 0; g < groups; g++) {
            const double *t = table + (r * groups + g) * 16;
            int64_t end = (g + 1) * width < in ? (g + 1) * width : in;
            for (int64_t c = g * width; c < end; c++) {
                uint8_t b = p[c >> 1];
                o[c] = t[(c & 1) ? (b >> 4) : (b & 15)];
            }
            if (a)
                for (int64_t c = g * width; c < end; c++)
                    a[c] = (float)fabs(o[c]);
        }
    }
}
