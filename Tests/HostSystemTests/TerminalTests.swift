import Glibc
import CLinux
import HostSystem
import Testing

@Suite("Terminals")
struct TerminalTests {
    @Test("A pseudo-terminal carries bytes both ways between its two sides")
    func pseudoTerminal() throws {
        let pty = try PseudoTerminal()
        #expect(pty.path.hasPrefix("/dev/pts/"))
        let terminal = try OwnedFileDescriptor(path: pty.path, flags: O_RDWR | O_NOCTTY)
        try terminal.writeAll(Array("to-vmm".utf8))
        var buffer = [UInt8](repeating: 0, count: 16)
        let n = try buffer.withUnsafeMutableBytes { (raw) throws(SystemError) -> Int in try pty.controller.read(into: raw) }
        #expect(Array(buffer[0..<n]) == Array("to-vmm".utf8), "raw mode: no line buffering, no echo")
        try pty.controller.writeAll(Array("to-user".utf8))
        let m = try buffer.withUnsafeMutableBytes { (raw) throws(SystemError) -> Int in try terminal.read(into: raw) }
        #expect(Array(buffer[0..<m]) == Array("to-user".utf8))
    }

    @Test("Raw mode turns off echo and line editing, and restore puts them back")
    func rawModeRestores() throws {
        let pty = try PseudoTerminal()
        let terminal = try OwnedFileDescriptor(path: pty.path, flags: O_RDWR | O_NOCTTY)
        var settings = termios()
        #expect(tcgetattr(terminal.rawValue, &settings) == 0)
        settings.c_lflag |= tcflag_t(ECHO | ICANON)
        #expect(tcsetattr(terminal.rawValue, TCSANOW, &settings) == 0)

        let raw = try RawTerminal(descriptor: terminal.rawValue)
        #expect(tcgetattr(terminal.rawValue, &settings) == 0)
        #expect(settings.c_lflag & tcflag_t(ECHO | ICANON) == 0)
        raw.restore()
        #expect(tcgetattr(terminal.rawValue, &settings) == 0)
        #expect(settings.c_lflag & tcflag_t(ECHO | ICANON) == tcflag_t(ECHO | ICANON))
        raw.restore()   // idempotent
        #expect(!RawTerminal.isTerminal(try EventFD().rawValue))
        #expect(throws: SystemError.self) { _ = try RawTerminal(descriptor: try EventFD().rawValue) }
    }

    @Test("a client that opens and closes the pty leaves no hang-up: the next client's input still arrives, and unread output never blocks")
    func ptySurvivesClients() throws {
        let pty = try PseudoTerminal()
        do {
            let first = try OwnedFileDescriptor(path: pty.path, flags: O_RDWR | O_NOCTTY)
            _ = first
        }
        var byte: UInt8 = 0
        // Nothing typed yet: EAGAIN, not EIO (a hang-up would stop an input pump for good).
        #expect(read(pty.controller.rawValue, &byte, 1) == -1 && errno == EAGAIN)
        let second = try OwnedFileDescriptor(path: pty.path, flags: O_RDWR | O_NOCTTY)
        var typed: UInt8 = 0x41
        #expect(write(second.rawValue, &typed, 1) == 1)
        var got = 0
        for _ in 0..<100 where got == 0 {
            got = read(pty.controller.rawValue, &byte, 1)
            if got <= 0 { usleep(1000); got = 0 }
        }
        #expect(got == 1 && byte == 0x41)
        // Output nobody reads: the writes stop being taken (EAGAIN) instead of blocking.
        let chunk = [UInt8](repeating: 0x2E, count: 4096)
        var refused = false
        for _ in 0..<256 where !refused {
            refused = chunk.withUnsafeBytes { write(pty.controller.rawValue, $0.baseAddress, $0.count) } < 0 && errno == EAGAIN
        }
        #expect(refused)
    }
}
