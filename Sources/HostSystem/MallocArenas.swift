import CLinux

/// The C allocator's settings a long-running process may want to change before it starts threads.
public enum MallocArenas {
    /// Makes glibc's malloc use one arena for every thread instead of one per thread that
    /// allocates: each extra arena keeps its touched pages resident for the life of the process.
    /// Small allocations still go through each thread's own cache without taking the arena's lock.
    /// Call it before any thread starts. Returns false where the C library refuses it.
    @discardableResult
    public static func useOne() -> Bool {
        mallopt(M_ARENA_MAX, 1) == 1
    }
}
