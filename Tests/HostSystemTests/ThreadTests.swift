import CLinux
import Glibc
import HostSystem
import Testing

extension HostSystemTests {
    @Suite struct HostThreadTests {
        @Test func runsItsBodyAndJoins() throws {
            let ran = Shared(false)
            let thread = try HostThread(name: "body-test") { ran.update { $0 = true } }
            #expect(thread.name == "body-test")
            thread.join()
            #expect(ran.value)
            thread.join()  // a second join is harmless
        }

        @Test func theKernelSeesTheThreadName() throws {
            let seen = Shared<[String?]>([])
            let first = try HostThread(name: "ch-vcpu0") { seen.update { $0.append(currentThreadName()) } }
            first.join()
            let second = try HostThread(name: "a-name-longer-than-fifteen-bytes") {
                seen.update { $0.append(currentThreadName()) }
            }
            second.join()
            #expect(seen.value == ["ch-vcpu0", "a-name-longer-t"])
        }
    }

    @Suite struct KickSignalTests {
        @Test func numberIsTheFirstRealTimeSignal() {
            #expect(KickSignal.number == clinux_sigrtmin())
            #expect(KickSignal.number > SIGSYS && KickSignal.number <= clinux_sigrtmax())
        }

        @Test func kickInterruptsABlockingRead() throws {
            try KickSignal.install()
            let (readEnd, writeEnd) = try makePipe()
            let ready = try EventFD()
            let finished = try EventFD()
            let outcome = Shared<(result: Int, errno: Int32)?>(nil)
            let reader = try HostThread(name: "kick-target") {
                try? KickSignal.unblockInCurrentThread()
                try? ready.signal()
                var byte: UInt8 = 0
                // A bare read(2): the wrappers would retry after EINTR.
                let result = read(readEnd.rawValue, &byte, 1)
                let code = clinux_errno()
                outcome.update { $0 = (result, code) }
                try? finished.signal()
            }
            #expect(waitFor(ready))
            // A kick that lands just before the thread enters read() is lost, so kick until it returns.
            var returned = false
            let deadline = ContinuousClock.now + .seconds(10)
            while !returned && ContinuousClock.now < deadline {
                try reader.send(signal: KickSignal.number)
                returned = waitFor(finished, timeoutMilliseconds: 20)
            }
            if !returned { try writeEnd.writeAll([1]) }  // never leave the thread blocked
            reader.join()
            #expect(returned)
            #expect(outcome.value?.result == -1)
            #expect(outcome.value?.errno == EINTR)
        }
    }
}
