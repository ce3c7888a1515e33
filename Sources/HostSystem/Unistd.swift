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

/// Writes `text` to standard error with one `write(2)`, unbuffered: for messages a person
/// must see even before (or without) logging being set up.
public func writeToStandardError(_ text: String) {
    let bytes = Array(text.utf8)
    _ = bytes.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
}
