/* The C interface of libspinel_sentencepiece.so, a small library of ours
 * that links libsentencepiece. Debian's libsentencepiece bundles and exports
 * its own protobuf-lite, which collides with libprotobuf (ONNX) in one
 * namespace, so spinel never links it: runtime/tokenizer/sentencepiece.cpp
 * loads this shim with dlmopen(LM_ID_NEWLM), in a link namespace of its own.
 * Only plain C types cross: no C++ object, exception or heap block allocated
 * on one side is freed on the other (each namespace has its own allocator). */
#ifndef SPINEL_SPM_SHIM_H
#define SPINEL_SPM_SHIM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SPNL_SPM_ABI 1

typedef int (*spnl_spm_abi_fn)(void);
/* Returns a processor for a serialized .model, or NULL with the reason in err. */
typedef void* (*spnl_spm_load_fn)(const char* data, size_t size, char* err, size_t err_cap);
typedef void (*spnl_spm_free_fn)(void* sp);
typedef int (*spnl_spm_piece_size_fn)(const void* sp);
/* Copies up to cap bytes of the piece; returns its full length. */
typedef size_t (*spnl_spm_id_to_piece_fn)(const void* sp, int id, char* buf, size_t cap);
/* which: 0 unk, 1 bos, 2 eos, 3 pad; -1 when the model has none. */
typedef int (*spnl_spm_special_id_fn)(const void* sp, int which);
/* 0 normal, 1 control, 2 unknown, 3 unused, 4 byte, 5 user-defined. */
typedef int (*spnl_spm_piece_type_fn)(const void* sp, int id);
/* Writes up to cap ids; returns how many the text has (call again with more
 * room when larger than cap), or -1 with the reason in err. */
typedef long (*spnl_spm_encode_fn)(const void* sp, const char* text, size_t size, int32_t* ids,
                                   size_t cap, char* err, size_t err_cap);

#ifdef __cplusplus
}
#endif

#endif
