/// Copies libFuzzer's input into a ``FuzzInput`` and runs `body` on it; always returns 0
/// (libFuzzer's "keep going": crashes, not return values, report problems).
public func fuzzEntry(_ data: UnsafePointer<UInt8>?, _ size: Int, _ body: (inout FuzzInput) -> Void) -> CInt {
    var input = data.map { FuzzInput($0, size) } ?? FuzzInput([])
    body(&input)
    return 0
}
