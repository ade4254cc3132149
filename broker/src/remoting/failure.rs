//! A handler's failure: a response code and a remark, turned into an error response.

use thruster_protocol::response_code;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub code: i32,
    pub remark: String,
}

impl Failure {
    pub fn new(code: i32, remark: impl Into<String>) -> Failure {
        Failure {
            code,
            remark: remark.into(),
        }
    }

    pub fn system(remark: impl Into<String>) -> Failure {
        Failure::new(response_code::SYSTEM_ERROR, remark)
    }
}

/// Header decode errors, I/O errors and the like become SYSTEM_ERROR with their message.
impl<E: std::error::Error> From<E> for Failure {
    fn from(error: E) -> Failure {
        Failure::system(error.to_string())
    }
}
