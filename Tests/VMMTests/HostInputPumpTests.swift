import CLinux
import Devices
import Glibc
import HostSystem
import Logging
import Testing

@testable import VMM

@Suite("Host input into the UART")
struct HostInputPumpTests {
    /// Bytes typed into a pipe reach the UART; the guest "misses" the first edge (it does
    /// not read), so the character-timeout timer raises the interrupt again until it reads,
    /// then stops once the FIFO is empty.
    @Test func characterTimeoutRepeatsTheEdgeUntilTheGuestReads() throws {
        let line = CountingLine()
        let uart = Serial16550(interrupt: line)
        uart.write(offset: Serial16550.Register.interruptEnable.rawValue, size: 1, value: 0x01)
        var fds: [Int32] = [0, 0]
        #expect(clinux_pipe_cloexec(&fds) == 0)
        defer { close(fds[0]); close(fds[1]) }
        let events = try EventManager()
        let pump = try HostInputPump(
            sink: .serial(uart), name: "serial", descriptor: fds[0], events: events,
            logger: Logger(label: "test"))
        try pump.start()
        defer { pump.stop() }

        let typed = Array("echo hi\n".utf8)
        #expect(typed.withUnsafeBytes { write(fds[1], $0.baseAddress, $0.count) } == typed.count)
        // Run the loop until the bytes are in and two timeouts re-raised the interrupt.
        var rounds = 0
        while line.count < 3, rounds < 200 {
            _ = try events.runOnce(timeoutMilliseconds: 100)
            rounds += 1
        }
        #expect(line.count >= 3)  // the enqueue's edge and at least two timeouts
        // The guest reads everything: the timer finds the FIFO empty and stops raising.
        var read: [UInt8] = []
        while uart.read(offset: Serial16550.Register.lineStatus.rawValue, size: 1) & 0x01 != 0 {
            read.append(UInt8(uart.read(offset: Serial16550.Register.data.rawValue, size: 1)))
        }
        #expect(read == typed)
        _ = try events.runOnce(timeoutMilliseconds: 100)
        let settled = line.count
        for _ in 0..<3 { _ = try events.runOnce(timeoutMilliseconds: 30) }
        #expect(line.count == settled)
    }
}
