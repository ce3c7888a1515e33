#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

// Module-level names for read(2)/write(2), so that types with their own `read`/`write`
// methods can still reach the system calls.
@usableFromInline func unistdRead(_ fd: Int32, _ buffer: UnsafeMutableRawPointer?, _ count: Int) -> Int {
    read(fd, buffer, count)
}
@usableFromInline func unistdWrite(_ fd: Int32, _ buffer: UnsafeRawPointer?, _ count: Int) -> Int {
    write(fd, buffer, count)
}
