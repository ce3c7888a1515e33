import CLinux
import HostSystem
import Testing

extension HostSystemTests {
    @Suite struct EventFDTests {
        @Test func readReturnsTheSumOfSignalsAndResets() throws {
            let event = try EventFD()
            try event.signal()
            try event.signal(4)
            #expect(try event.read() == 5)
            #expect(try event.read() == nil)
        }

        @Test func initialValueIsReadable() throws {
            let event = try EventFD(initialValue: 7)
            #expect(try event.read() == 7)
            #expect(clinux_fcntl_val(event.rawValue, F_GETFD, 0) & FD_CLOEXEC != 0)
        }

        @Test func semaphoreModeTakesOneAtATime() throws {
            let event = try EventFD(initialValue: 3, semaphore: true)
            #expect(try event.read() == 1)
            #expect(try event.read() == 1)
            #expect(try event.read() == 1)
            #expect(try event.read() == nil)
        }

        @Test func blockingReadWaitsForASignalFromAnotherThread() throws {
            let event = try EventFD(nonBlocking: false)
            let received = Shared<UInt64?>(nil)
            let reader = try HostThread(name: "eventfd-reader") {
                let value = try? event.read()
                received.update { $0 = value }
            }
            try event.signal(3)
            reader.join()
            #expect(received.value == 3)
        }
    }
}
