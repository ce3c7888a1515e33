// The two HTTP vocabulary types the API needs: request methods and response statuses.

/// An HTTP request method, as the request line spells it (RFC 9110 section 9, plus PATCH).
///
/// The API's endpoints take `GET` or `PUT`; the others are recognised so that a request with
/// them can be refused naming the method. A method outside this list is a malformed request.
public enum HTTPMethod: String, Sendable, Hashable, CaseIterable, CustomStringConvertible {
    /// `GET`: read a resource.
    case GET
    /// `HEAD`: like GET without the body.
    case HEAD
    /// `POST`: submit data.
    case POST
    /// `PUT`: replace or act on a resource (every API action).
    case PUT
    /// `DELETE`: remove a resource.
    case DELETE
    /// `PATCH`: modify part of a resource.
    case PATCH
    /// `OPTIONS`: the communication options.
    case OPTIONS
    /// `CONNECT`: a tunnel.
    case CONNECT
    /// `TRACE`: a loop-back test.
    case TRACE

    /// The method's name (`"GET"`).
    public var description: String { rawValue }
}

/// An HTTP response status: its code and reason phrase.
public struct HTTPStatus: Sendable, Hashable, CustomStringConvertible {
    /// The three-digit code.
    public let code: Int
    /// The reason phrase sent after the code on the status line.
    public let reasonPhrase: String

    /// A status with `code` and `reasonPhrase`.
    public init(code: Int, reasonPhrase: String) {
        self.code = code
        self.reasonPhrase = reasonPhrase
    }

    /// 100 Continue: the interim answer to `Expect: 100-continue`.
    public static let `continue` = HTTPStatus(code: 100, reasonPhrase: "Continue")
    /// 200 OK.
    public static let ok = HTTPStatus(code: 200, reasonPhrase: "OK")
    /// 204 No Content: an action done, nothing to say.
    public static let noContent = HTTPStatus(code: 204, reasonPhrase: "No Content")
    /// 400 Bad Request.
    public static let badRequest = HTTPStatus(code: 400, reasonPhrase: "Bad Request")
    /// 404 Not Found.
    public static let notFound = HTTPStatus(code: 404, reasonPhrase: "Not Found")
    /// 405 Method Not Allowed.
    public static let methodNotAllowed = HTTPStatus(code: 405, reasonPhrase: "Method Not Allowed")
    /// 408 Request Timeout.
    public static let requestTimeout = HTTPStatus(code: 408, reasonPhrase: "Request Timeout")
    /// 500 Internal Server Error.
    public static let internalServerError = HTTPStatus(code: 500, reasonPhrase: "Internal Server Error")

    /// `"204 No Content"`.
    public var description: String { "\(code) \(reasonPhrase)" }
}
