import CLinux
import Glibc
import HostSystem
import Testing

extension HostSystemTests {
    @Suite struct EventManagerTests {
        @Test func eventBitsAreTheEpollBits() {
            #expect(EpollEvents.readable.rawValue == EPOLLIN.rawValue)
            #expect(EpollEvents.writable.rawValue == EPOLLOUT.rawValue)
            #expect(EpollEvents.error.rawValue == EPOLLERR.rawValue)
            #expect(EpollEvents.hangUp.rawValue == EPOLLHUP.rawValue)
            #expect(EpollEvents.readHangUp.rawValue == EPOLLRDHUP.rawValue)
            #expect(EpollEvents.edgeTriggered.rawValue == EPOLLET.rawValue)
            #expect(EpollEvents([.readable, .hangUp]).description == "[readable, hangUp]")
        }

        @Test func handlerRunsWhenAnEventFDIsReadable() throws {
            let manager = try EventManager()
            let event = try EventFD()
            let seen = Shared<[(EpollEvents, UInt64?)]>([])
            try manager.add(event.rawValue) { events in
                let value = try? event.read()
                seen.update { $0.append((events, value)) }
            }
            #expect(manager.registeredCount == 1)
            #expect(try manager.runOnce(timeoutMilliseconds: 0) == 0)

            try event.signal(2)
            #expect(try manager.runOnce(timeoutMilliseconds: 10_000) == 1)
            #expect(seen.value.count == 1)
            #expect(seen.value.first?.0 == .readable)
            #expect(seen.value.first?.1 == 2)
            // Drained by the handler: nothing is ready any more.
            #expect(try manager.runOnce(timeoutMilliseconds: 0) == 0)
        }

        @Test("a closed gate holds the loop thread between rounds: no handler runs until it opens, and nothing is lost")
        func gateHoldsTheLoop() throws {
            let manager = try EventManager()
            let gate = PauseGate()
            let event = try EventFD(nonBlocking: true)
            let total = Shared<UInt64>(0)
            try manager.add(event.rawValue) { _ in
                let value = (try? event.read()) ?? 0
                total.update { $0 += value }
            }
            try manager.start(name: "gate-test", gate: gate)
            defer { manager.stop() }
            try event.signal(1)
            var waited = 0
            while total.value != 1 && waited < 1000 { usleep(1000); waited += 1 }
            #expect(total.value == 1)
            gate.close()
            try manager.wake()
            #expect(gate.waitUntilParked(1, timeoutMilliseconds: 5000))
            try event.signal(5)
            usleep(100_000)
            #expect(total.value == 1, "no handler ran while the gate was closed")
            gate.open()
            waited = 0
            while total.value != 6 && waited < 5000 { usleep(1000); waited += 1 }
            #expect(total.value == 6, "what arrived meanwhile is handled after the gate opens")
        }

        @Test func wakeUnblocksAWaitingRunOnce() throws {
            let manager = try EventManager()
            let entering = try EventFD()
            let done = try EventFD()
            let result = Shared<Result<Int, SystemError>?>(nil)
            let waiter = try HostThread(name: "em-waiter") {
                try? entering.signal()
                let outcome = Result { () throws(SystemError) in try manager.runOnce(timeoutMilliseconds: 60_000) }
                result.update { $0 = outcome }
                try? done.signal()
            }
            #expect(waitFor(entering))
            // A wake that comes before the wait starts stays pending, so there is no race here.
            try manager.wake()
            let woke = waitFor(done)
            if !woke {
                // Never leave the thread blocked.
                try manager.add(done.rawValue) { _ in }
            }
            waiter.join()
            #expect(woke)
            #expect(try result.value?.get() == 0)
        }

        @Test func handlerCanRemoveItself() throws {
            let manager = try EventManager()
            let event = try EventFD(initialValue: 1)  // stays readable: level-triggered
            let calls = Shared(0)
            try manager.add(event.rawValue) { _ in
                calls.update { $0 += 1 }
                try? manager.remove(event.rawValue)
            }
            #expect(try manager.runOnce(timeoutMilliseconds: 10_000) == 1)
            #expect(manager.registeredCount == 0)
            #expect(try manager.runOnce(timeoutMilliseconds: 0) == 0)
            #expect(calls.value == 1)
        }

        @Test func handlerCanRemoveAnotherReadyDescriptor() throws {
            let manager = try EventManager()
            let first = try EventFD(initialValue: 1)
            let second = try EventFD(initialValue: 1)
            let calls = Shared(0)
            // Both are ready in the same batch; whichever runs first removes the other.
            try manager.add(first.rawValue) { _ in
                calls.update { $0 += 1 }
                try? manager.remove(second.rawValue)
                try? manager.remove(first.rawValue)
            }
            try manager.add(second.rawValue) { _ in
                calls.update { $0 += 1 }
                try? manager.remove(first.rawValue)
                try? manager.remove(second.rawValue)
            }
            #expect(try manager.runOnce(timeoutMilliseconds: 10_000) == 1)
            #expect(calls.value == 1)
            #expect(manager.registeredCount == 0)
        }

        @Test func staleEventIsNotHandedToAReusedDescriptorNumber() throws {
            let manager = try EventManager()
            let trigger = try EventFD(initialValue: 1)
            let reusedNumber = eventfd(1, Int32(EFD_CLOEXEC | EFD_NONBLOCK))
            try #require(reusedNumber >= 0)
            defer { close(reusedNumber) }
            let log = Shared<[String]>([])
            try manager.add(trigger.rawValue) { _ in
                log.update { $0.append("trigger") }
                try? manager.remove(trigger.rawValue)
                // Replace the open file behind `reusedNumber` with a new, idle eventfd and
                // register the number again, as a device that closes and reopens would.
                try? manager.remove(reusedNumber)
                let fresh = eventfd(0, Int32(EFD_CLOEXEC | EFD_NONBLOCK))
                _ = dup2(fresh, reusedNumber)
                _ = clinux_fcntl_val(reusedNumber, F_SETFD, Int(FD_CLOEXEC))
                close(fresh)
                try? manager.add(reusedNumber) { _ in log.update { $0.append("new") } }
            }
            try manager.add(reusedNumber) { _ in log.update { $0.append("old") } }
            // Both are ready; epoll reports them in the order they became ready.
            #expect(try manager.runOnce(timeoutMilliseconds: 10_000) == 1)
            #expect(log.value == ["trigger"])
            #expect(try manager.runOnce(timeoutMilliseconds: 0) == 0)
            #expect(manager.registeredCount == 1)
        }

        @Test func removeFromAnotherThreadWaitsForTheRunningHandler() throws {
            let manager = try EventManager()
            let source = try EventFD(initialValue: 1)  // never drained: ready on every wait
            let entered = try EventFD()
            let gate = try EventFD()
            let removed = try EventFD()
            let calls = Shared(0)
            let log = Shared<[String]>([])
            try manager.add(source.rawValue) { _ in
                if calls.update({ $0 += 1 }) == 1 {
                    try? entered.signal()
                    _ = waitFor(gate)
                }
                log.update { $0.append("handler returned") }
            }
            try manager.start(name: "em-remove-test")
            #expect(waitFor(entered))

            let remover = try HostThread(name: "em-remover") {
                try? manager.remove(source.rawValue)
                log.update { $0.append("remove returned") }
                try? removed.signal()
            }
            // The handler is held at the gate, so remove() cannot have returned.
            #expect(!waitFor(removed, timeoutMilliseconds: 100))
            try gate.signal()
            #expect(waitFor(removed))
            remover.join()

            // Let the loop go round again: the removed handler must stay silent.
            let probe = try EventFD()
            let probed = try EventFD()
            try manager.add(probe.rawValue) { _ in
                _ = try? probe.read()
                try? probed.signal()
            }
            try probe.signal()
            #expect(waitFor(probed))
            manager.stop()
            #expect(calls.value == 1)
            #expect(log.value == ["handler returned", "remove returned"])
        }

        @Test func addingTwiceIsRefused() throws {
            let manager = try EventManager()
            let event = try EventFD()
            try manager.add(event.rawValue) { _ in }
            let error = #expect(throws: SystemError.self) { try manager.add(event.rawValue) { _ in } }
            #expect(error?.errno == EEXIST)
            #expect(error?.call == "epoll_ctl(ADD, fd \(event.rawValue))")
            #expect(manager.registeredCount == 1)
        }

        @Test func unknownDescriptorsAreRefused() throws {
            let manager = try EventManager()
            let event = try EventFD()
            let modifyError = #expect(throws: SystemError.self) { try manager.modify(event.rawValue, events: .writable) }
            #expect(modifyError?.errno == ENOENT)
            #expect(modifyError?.call == "epoll_ctl(MOD, fd \(event.rawValue))")
            let removeError = #expect(throws: SystemError.self) { try manager.remove(event.rawValue) }
            #expect(removeError?.errno == ENOENT)
            let badError = #expect(throws: SystemError.self) { try manager.add(-1) { _ in } }
            #expect(badError?.errno == EBADF)
            #expect(manager.registeredCount == 0)
        }

        @Test func modifyChangesTheWatchedEvents() throws {
            let manager = try EventManager()
            let event = try EventFD()
            let seen = Shared<[EpollEvents]>([])
            try manager.add(event.rawValue) { events in seen.update { $0.append(events) } }
            // An eventfd is always writable but not readable until signalled.
            #expect(try manager.runOnce(timeoutMilliseconds: 0) == 0)
            try manager.modify(event.rawValue, events: .writable)
            #expect(try manager.runOnce(timeoutMilliseconds: 10_000) == 1)
            #expect(seen.value == [.writable])
        }

        @Test func edgeTriggeredReportsOnlyChanges() throws {
            let manager = try EventManager()
            let event = try EventFD()
            let calls = Shared(0)
            try manager.add(event.rawValue, events: [.readable, .edgeTriggered]) { _ in calls.update { $0 += 1 } }
            try event.signal()
            #expect(try manager.runOnce(timeoutMilliseconds: 10_000) == 1)
            // Still readable (not drained), but no new edge.
            #expect(try manager.runOnce(timeoutMilliseconds: 0) == 0)
            try event.signal()
            #expect(try manager.runOnce(timeoutMilliseconds: 10_000) == 1)
            #expect(calls.value == 2)
        }

        @Test func hangUpIsReported() throws {
            let manager = try EventManager()
            let (readEnd, writeEnd) = try makePipe()
            let writer = writeEnd.take()
            let seen = Shared<EpollEvents>([])
            try manager.add(readEnd.rawValue) { events in seen.update { $0 = events } }
            #expect(try manager.runOnce(timeoutMilliseconds: 0) == 0)
            #expect(close(writer) == 0)  // the only write end
            #expect(try manager.runOnce(timeoutMilliseconds: 10_000) == 1)
            #expect(seen.value.contains(.hangUp))
        }

        @Test func removingAnAlreadyClosedDescriptorForgetsIt() throws {
            let manager = try EventManager()
            var event: EventFD? = try EventFD()
            let number = try #require(event?.rawValue)
            try manager.add(number) { _ in }
            event = nil  // closed, which also takes it out of the epoll set
            try manager.remove(number)
            #expect(manager.registeredCount == 0)
        }

        @Test func loopThreadRunsHandlersSignalledFromAnotherThread() throws {
            let manager = try EventManager()
            let source = try EventFD()
            let done = try EventFD()
            let total = Shared<UInt64>(0)
            let threadNames = Shared<Set<String>>([])
            try manager.add(source.rawValue) { _ in
                guard let value = try? source.read() else { return }
                if let name = currentThreadName() { threadNames.update { $0.insert(name) } }
                if total.update({ $0 += value }) == 1000 { try? done.signal() }
            }
            try manager.start(name: "em-loop-test")
            let producer = try HostThread(name: "em-producer") {
                for _ in 0..<1000 { try? source.signal() }
            }
            producer.join()
            #expect(waitFor(done))
            manager.stop()
            #expect(total.value == 1000)
            #expect(threadNames.value == ["em-loop-test"])
            #expect(manager.loopError == nil)
        }

        @Test func stopIsIdempotentAndSafeWithoutStart() throws {
            let manager = try EventManager()
            manager.stop()
            manager.stop()

            let event = try EventFD()
            let fired = try EventFD()
            try manager.add(event.rawValue) { _ in
                _ = try? event.read()
                try? fired.signal()
            }
            // Start, stop, and start again: the loop can be restarted.
            for round in 0..<2 {
                try manager.start(name: "em-restart-\(round)")
                try event.signal()
                #expect(waitFor(fired))
                manager.stop()
                manager.stop()
            }
        }

        @Test func startingTwiceIsRefused() throws {
            let manager = try EventManager()
            try manager.start()
            defer { manager.stop() }
            let error = #expect(throws: SystemError.self) { try manager.start() }
            #expect(error?.errno == EBUSY)
            #expect(error?.call.contains("ch-event-loop") == true)
        }

        @Test func stopFromInsideAHandlerEndsTheLoop() throws {
            let manager = try EventManager()
            let event = try EventFD()
            let handled = try EventFD()
            try manager.add(event.rawValue) { _ in
                _ = try? event.read()
                manager.stop()  // on the loop thread: must not wait for itself
                try? handled.signal()
            }
            try manager.start()
            try event.signal()
            #expect(waitFor(handled))
            manager.stop()  // joins the thread, which has ended or is ending
            // The loop thread is over; the manager can still be driven by hand.
            try event.signal()
            #expect(try manager.runOnce(timeoutMilliseconds: 10_000) == 1)
            #expect(waitFor(handled))
        }

        @Test func registeredCountFollowsAddAndRemove() throws {
            let manager = try EventManager()
            let events = try (0..<5).map { _ throws(SystemError) in try EventFD() }
            for event in events { try manager.add(event.rawValue) { _ in } }
            #expect(manager.registeredCount == 5)
            try manager.remove(events[1].rawValue)
            try manager.remove(events[3].rawValue)
            #expect(manager.registeredCount == 3)
            try manager.add(events[1].rawValue, events: .writable) { _ in }
            #expect(manager.registeredCount == 4)
        }
    }
}
