// zlib for the Qcow module: compressed qcow2 clusters are raw deflate streams.
#include <zlib.h>
